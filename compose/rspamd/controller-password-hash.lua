-- Print rspamd's PBKDF hash ("$2$salt$hash") of the password read from stdin, so the
-- password never appears in argv (`rspamadm pw` wants a terminal or -p).
local cryptobox = require "rspamd_cryptobox"
local password = io.read("*l")
if not password or password == "" then
  io.stderr:write("no password on stdin\n")
  os.exit(1)
end
io.write(cryptobox.pbkdf(password), "\n")
