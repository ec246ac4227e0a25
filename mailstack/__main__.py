from mailstack.cli.main import run

run()
