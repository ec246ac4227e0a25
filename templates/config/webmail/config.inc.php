<?php
// Roundcube webmail for {{ config.hostname }}, at https://{{ config.hostname }}{{ webmail.path }}.
// The database password and the DES key are not here: the entrypoint writes them from the
// stack's secrets to /run/mailstack/webmail/secrets.inc.php, read after this file.

$config = [];

// --- the mail server: IMAP and submission over the stack's network, TLS verified ---------
// The certificate names the hostname, not the service name: check it against that name and
// the {% if stack_ca %}stack's own CA{% else %}system's trusted CAs{% endif %}.
$tls = ['ssl' => [
    'verify_peer' => true,
    'verify_peer_name' => true,
    'peer_name' => '{{ config.hostname }}',
{% if stack_ca %}
    'cafile' => '/etc/mailstack/tls/ca.pem',
{% else %}
    'cafile' => '/etc/ssl/certs/ca-certificates.crt',
{% endif %}
]];
$config['imap_host'] = 'ssl://{{ links.webmail_dovecot.host }}:993';
$config['imap_conn_options'] = $tls;
$config['imap_timeout'] = 30;
$config['smtp_host'] = 'tls://postfix:587';
$config['smtp_conn_options'] = $tls;
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['smtp_helo_host'] = '{{ config.hostname }}';
$config['managesieve_host'] = 'tls://{{ links.webmail_dovecot.host }}:4190';
$config['managesieve_conn_options'] = $tls;
$config['managesieve_vacation'] = 1;
// Full mail addresses only, as for IMAP and SMTP clients: no default domain is added.
$config['username_domain'] = '';
$config['login_lc'] = 2;

// --- the database: its own database and role in the stack's PostgreSQL -------------------
$config['db_prefix'] = '';
$config['session_storage'] = 'db';

// --- security ------------------------------------------------------------------------------
// Reached only through the front over HTTPS: cookies are Secure, HttpOnly and SameSite.
$config['use_https'] = true;
$config['session_samesite'] = 'Strict';
$config['session_lifetime'] = 30;
$config['ip_check'] = true;
$config['login_rate_limit'] = 3;
$config['x_frame_options'] = 'sameorigin';
$config['cipher_method'] = 'AES-256-CBC';
$config['enable_installer'] = false;
$config['login_autocomplete'] = 0;
// Remote images and resources in HTML mail stay blocked (the front's CSP also blocks them).
$config['show_images'] = 0;
$config['request_path'] = '{{ webmail.path }}';

// --- logs to the container's output; temporary files on its tmpfs ----------------------
$config['log_driver'] = 'stdout';
$config['log_logins'] = true;
$config['temp_dir'] = '/tmp/roundcube';
$config['max_message_size'] = '25M';

// --- appearance and plugins ----------------------------------------------------------------
$config['product_name'] = 'Webmail {{ config.hostname }}';
$config['skin'] = 'elastic';
$config['support_url'] = '';
$config['mime_types'] = '/etc/roundcube/mimetypes.php';
{% if config.features.admin %}
$config['plugins'] = ['mailstack_client_address', 'mailstack_mfa', 'managesieve', 'archive', 'zipdownload'];
{% else %}
$config['plugins'] = ['mailstack_client_address', 'managesieve', 'archive', 'zipdownload'];
{% endif %}
$config['archive_mbox'] = 'Archive';
$config['drafts_mbox'] = 'Drafts';
$config['junk_mbox'] = 'Junk';
$config['sent_mbox'] = 'Sent';
$config['trash_mbox'] = 'Trash';
{% if config.features.admin %}

// --- the second factor (plugin mailstack_mfa; docs/mfa.md) ---------------------------------
// After the password, a user with a confirmed TOTP must give a code before the session opens;
// the admin service checks it with mailstack's own core. Its key (webmail_mfa_key) is in
// the secrets file. policy.mfa: {{ config.policy.mfa }}.
$config['mailstack_mfa_url'] = 'http://{{ links.webmail_admin.host }}:8080/internal/v1/mfa/';
$config['mailstack_mfa_required'] = {{ 'true' if config.policy.mfa == 'required' else 'false' }};
{% endif %}
