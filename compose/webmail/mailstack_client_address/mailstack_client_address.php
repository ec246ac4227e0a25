<?php
/**
 * mailstack: tell Dovecot who is really logging in.
 *
 * Every webmail login reaches Dovecot from the webmail container. Before authenticating,
 * this plugin sends the browser's address in an IMAP ID command (x-originating-ip);
 * Dovecot trusts it from the webmail container only (login_trusted_networks), so failed
 * webmail logins count toward the brute-force defence of the browser's address, and the
 * logs name it. The front talks FastCGI and sets REMOTE_ADDR to the browser's address
 * itself (no forwarded header to believe); only the front may reach PHP-FPM.
 */
class mailstack_client_address extends rcube_plugin
{
    public $task = '.*';

    public function init()
    {
        $this->add_hook('storage_connect', [$this, 'storage_connect']);
    }

    public function storage_connect($args)
    {
        $ident = (array) ($args['preauth_ident'] ?? []);
        $ident['x-originating-ip'] = (string) ($_SERVER['REMOTE_ADDR'] ?? '');
        if (!empty($_SERVER['REMOTE_PORT'])) {
            $ident['x-originating-port'] = (string) $_SERVER['REMOTE_PORT'];
        }
        $args['preauth_ident'] = $ident;
        return $args;
    }
}
