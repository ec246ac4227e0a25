<?php
/**
 * mailstack: the second factor at the webmail's door (issue 16; docs/mfa.md).
 *
 * The account password opens IMAP as always (Dovecot accepts it from this container only,
 * for a user with a second factor). Until this session has passed the gate, every request
 * stops here, at the `startup` hook, before Roundcube runs any task: no mailbox list, no
 * message, no settings, no AJAX call. The gate asks the admin service (its internal
 * endpoint, with the shared key webmail_mfa_key) whether the user has a confirmed TOTP; if
 * so it shows a code form and lets the session through only when the admin service accepts
 * a code (mailstack's own check: a code is never accepted twice; a recovery code works).
 * A user without a second factor passes at once, unless policy.mfa is `required`: then the
 * user is told to have one set up, and nothing else is served.
 *
 * It fails closed: if the admin service cannot be asked, nobody gets past the gate.
 */
class mailstack_mfa extends rcube_plugin
{
    public $task = '.*';

    // The session's verdict: the user name it was given for (a new login starts over).
    private const PASSED = 'mailstack_mfa_passed';
    private const FAILURES = 'mailstack_mfa_failures';
    // Wrong codes in one session before it is closed (the bans service counts them too).
    private const MAX_FAILURES = 5;

    public function init()
    {
        $this->add_hook('startup', [$this, 'gate']);
        $this->add_hook('login_after', [$this, 'login_after']);
    }

    /** Every sign-in starts with the gate closed, whatever the session held before. */
    public function login_after($args)
    {
        unset($_SESSION[self::PASSED], $_SESSION[self::FAILURES]);
        return $args;
    }

    public function gate($args)
    {
        if (empty($_SESSION['user_id'])) {
            return $args;  // not signed in: Roundcube shows its own login form
        }
        $user = (string) ($_SESSION['username'] ?? '');
        if ($user !== '' && ($_SESSION[self::PASSED] ?? null) === $user) {
            return $args;
        }
        if ($args['task'] === 'logout') {
            return $args;  // Roundcube's logout (it checks the request token itself)
        }
        $rcmail = rcmail::get_instance();
        if (!empty($_POST['_mailstack_mfa'])) {
            $this->answer_code($rcmail, $user);
        }
        [$status, $reply] = $this->ask('status', ['address' => $user]);
        if ($status !== 200 || !isset($reply['second_factor'])) {
            $this->page($rcmail, 503, 'The second factor cannot be checked right now. Please try again in a moment.', false);
        }
        if ($reply['second_factor'] === true) {
            $this->page($rcmail, 200, '', true);
        }
        if ($rcmail->config->get('mailstack_mfa_required')) {
            $this->page($rcmail, 403, 'This account needs a second factor (an authenticator app) before it can use the webmail. Ask your mail administrator to set one up.', false);
        }
        $_SESSION[self::PASSED] = $user;  // no second factor, and none required
        return $args;
    }

    private function answer_code($rcmail, $user)
    {
        $token = (string) ($_POST['_token'] ?? '');
        if (!hash_equals((string) $rcmail->get_request_token(), $token)) {
            $this->page($rcmail, 403, 'The form expired. Please enter the code again.', true);
        }
        $code = substr(trim((string) ($_POST['_code'] ?? '')), 0, 64);
        [$status, $reply] = $this->ask('verify', [
            'address' => $user,
            'code' => $code,
            'client' => (string) ($_SERVER['REMOTE_ADDR'] ?? ''),
        ]);
        if ($status === 200 && ($reply['accepted'] ?? false) === true) {
            $_SESSION[self::PASSED] = $user;
            unset($_SESSION[self::FAILURES]);
            // A new session id for the signed-in session, as Roundcube does at its login.
            $rcmail->session->regenerate_id(false);
            $rcmail->session->set_auth_cookie();
            header('Location: ' . $rcmail->url(['_task' => 'mail']));
            http_response_code(303);
            exit;
        }
        if ($status === 429) {
            $this->close($rcmail, 'Too many failed sign-ins from your address; try again later.');
        }
        if ($status !== 200) {
            $this->page($rcmail, 503, 'The code cannot be checked right now. Please try again in a moment.', true);
        }
        $failures = (int) ($_SESSION[self::FAILURES] ?? 0) + 1;
        $_SESSION[self::FAILURES] = $failures;
        rcube::write_log('userlogins', sprintf(
            'Failed second factor for %s from %s (%d in this session)',
            $user, rcube_utils::remote_addr(), $failures
        ));
        if ($failures >= self::MAX_FAILURES) {
            $this->close($rcmail, 'Too many wrong codes: you have been signed out.');
        }
        $this->page($rcmail, 200, 'That code was not accepted. Codes work only once; wait for the next one.', true);
    }

    /** Ends the session and says why on a page of its own. */
    private function close($rcmail, $message)
    {
        $rcmail->kill_session();
        $this->page($rcmail, 403, $message, false, false);
    }

    /** One question to the admin service: [HTTP status, decoded JSON or null]. */
    private function ask($what, array $body)
    {
        $rcmail = rcmail::get_instance();
        $url = (string) $rcmail->config->get('mailstack_mfa_url');
        $key = (string) $rcmail->config->get('mailstack_mfa_key');
        if ($url === '' || $key === '') {
            return [0, null];
        }
        $context = stream_context_create(['http' => [
            'method' => 'POST',
            'header' => "Content-Type: application/json\r\nX-Mailstack-Key: {$key}\r\n",
            'content' => json_encode($body),
            // The bans service may hold a guessing client up to policy.bans.max_delay.
            'timeout' => 40,
            'ignore_errors' => true,
        ]]);
        $reply = @file_get_contents($url . $what, false, $context);
        $status = 0;
        foreach ($http_response_header ?? [] as $line) {
            if (preg_match('#^HTTP/\S+\s+(\d{3})#', $line, $match)) {
                $status = (int) $match[1];
            }
        }
        if ($reply === false) {
            rcube::raise_error(['code' => 500, 'message' => "mailstack_mfa: the admin service did not answer {$what}"], true, false);
            return [0, null];
        }
        $decoded = json_decode($reply, true);
        return [$status, is_array($decoded) ? $decoded : null];
    }

    /** A page of its own (no Roundcube template, no script), then the request ends. */
    private function page($rcmail, $status, $message, $ask_code, $signed_in = true)
    {
        $e = function ($text) {
            return htmlspecialchars((string) $text, ENT_QUOTES | ENT_HTML5, 'UTF-8');
        };
        $title = $e($rcmail->config->get('product_name', 'Webmail'));
        http_response_code($status);
        header('Content-Type: text/html; charset=UTF-8');
        header('Cache-Control: no-store');
        $remote = !empty($_GET['_remote']) || !empty($_POST['_remote'])
            || !empty($_SERVER['HTTP_X_ROUNDCUBE_REQUEST']);
        if ($remote) {
            // An AJAX call of a page loaded before: it gets nothing but a refusal.
            http_response_code(401);
            header('Content-Type: application/json');
            echo json_encode(['error' => 'second factor required']);
            exit;
        }
        echo "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>{$title}</title></head><body><main id=\"mailstack-mfa\">",
            "<h1>{$title}</h1>";
        if ($message !== '') {
            echo '<p id="mailstack-mfa-message" role="alert">', $e($message), '</p>';
        }
        if ($ask_code) {
            echo '<form method="post" action="', $e($rcmail->url(['_task' => 'mail'])), '">',
                '<input type="hidden" name="_mailstack_mfa" value="1">',
                '<input type="hidden" name="_token" value="', $e($rcmail->get_request_token()), '">',
                '<p><label for="mailstack-mfa-code">Code from your authenticator app ',
                '(or a recovery code)</label><br>',
                '<input id="mailstack-mfa-code" name="_code" autocomplete="one-time-code" ',
                'autocapitalize="off" spellcheck="false" required autofocus size="22" maxlength="64"></p>',
                '<p><button id="mailstack-mfa-submit" type="submit">Sign in</button></p></form>';
        }
        if ($signed_in) {
            echo '<p><a id="mailstack-mfa-logout" href="',
                $e($rcmail->url(['_task' => 'logout', '_token' => $rcmail->get_request_token()])),
                '">Sign out</a></p>';
        } else {
            echo '<p><a href="', $e($rcmail->url(['_task' => 'login'])), '">Back to the sign-in</a></p>';
        }
        echo "</main></body></html>\n";
        exit;
    }
}
