// Mail client autoconfiguration for {{ config.hostname }}, run by nginx (njs): Thunderbird's
// autoconfig XML, Outlook's POX autodiscover and Apple configuration profiles. Every answer
// names the stack's hostname and its published ports; addresses from a request are checked
// against a strict pattern before they appear in an answer (and are XML-escaped anyway).

const HOSTNAME = '{{ config.hostname }}';
const FIRST_DOMAIN = '{{ config.domain }}';
const IMAPS_PORT = {{ autoconfig.imaps }};
// features.pop3: offered after IMAP (clients take the first they support); 0 when off.
const POP3S_PORT = {{ autoconfig.pop3s }};
const SUBMISSIONS_PORT = {{ autoconfig.submissions }};
const SUBMISSION_PORT = {{ autoconfig.submission }};
// features.dav: calendars and contacts at /dav/ on the HTTPS port (Apple profiles carry them).
const DAV = {{ 'true' if autoconfig.dav else 'false' }};
const HTTPS_PORT = {{ autoconfig.https }};

const ADDRESS = /^[A-Za-z0-9.!#$%&'*+\/=?^_`{|}~-]{1,64}@([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+)$/;
const DOMAIN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+$/;

function xml(text) {
    return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
        .replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

// The address, when it is one (null otherwise); its domain in lower case.
function parseAddress(value) {
    if (typeof value !== 'string' || value.length > 254) {
        return null;
    }
    const match = value.trim().match(ADDRESS);
    if (!match) {
        return null;
    }
    const domain = match[1].toLowerCase();
    return { address: value.trim().split('@')[0] + '@' + domain, domain: domain };
}

// The mail domain a request is about: its address, else the autoconfig.<domain> name asked
// for, else the stack's first domain.
function requestDomain(r, parsed) {
    if (parsed) {
        return parsed.domain;
    }
    const host = String(r.headersIn.Host || '').toLowerCase().split(':')[0];
    const asked = host.replace(/^(autoconfig|autodiscover)\./, '');
    return asked !== host && DOMAIN.test(asked) ? asked : FIRST_DOMAIN;
}

function reply(r, status, type, body) {
    r.headersOut['Content-Type'] = type;
    r.headersOut['Cache-Control'] = 'no-store';
    r.return(status, body);
}

function thunderbird(r) {
    const parsed = parseAddress(r.args.emailaddress);
    const domain = requestDomain(r, parsed);
    const server = (tag, type, port, socket) => [
        `    <${tag} type="${type}">`,
        `      <hostname>${xml(HOSTNAME)}</hostname>`,
        `      <port>${port}</port>`,
        `      <socketType>${socket}</socketType>`,
        '      <authentication>password-cleartext</authentication>',
        '      <username>%EMAILADDRESS%</username>',
        `    </${tag}>`,
    ].join('\n');
    const body = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<clientConfig version="1.1">',
        `  <emailProvider id="${xml(domain)}">`,
        `    <domain>${xml(domain)}</domain>`,
        `    <displayName>${xml(domain)} mail</displayName>`,
        `    <displayShortName>${xml(domain)}</displayShortName>`,
        server('incomingServer', 'imap', IMAPS_PORT, 'SSL'),
        POP3S_PORT ? server('incomingServer', 'pop3', POP3S_PORT, 'SSL') : null,
        server('outgoingServer', 'smtp', SUBMISSIONS_PORT, 'SSL'),
        server('outgoingServer', 'smtp', SUBMISSION_PORT, 'STARTTLS'),
        '  </emailProvider>',
        '</clientConfig>',
        '',
    ].filter((line) => line !== null).join('\n');
    reply(r, 200, 'application/xml; charset=utf-8', body);
}

function outlookError(r, code, message) {
    const body = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">',
        '  <Response>',
        `    <Error Id="0" Time="00:00:00">`,
        `      <ErrorCode>${code}</ErrorCode>`,
        `      <Message>${xml(message)}</Message>`,
        '      <DebugData />',
        '    </Error>',
        '  </Response>',
        '</Autodiscover>',
        '',
    ].join('\n');
    reply(r, 200, 'application/xml; charset=utf-8', body);
}

function outlook(r) {
    if (r.method !== 'POST') {
        r.headersOut.Allow = 'POST';
        reply(r, 405, 'text/plain; charset=utf-8', 'POST an autodiscover request\n');
        return;
    }
    let request = '';
    try {
        request = r.requestText || '';
    } catch (e) {
        reply(r, 413, 'text/plain; charset=utf-8', 'request too large\n');
        return;
    }
    const found = request.match(/<(?:\w+:)?EMailAddress>\s*([^<\s]+)\s*<\/(?:\w+:)?EMailAddress>/);
    const parsed = found ? parseAddress(found[1]) : null;
    if (!parsed) {
        outlookError(r, 600, 'Invalid Request');
        return;
    }
    const schema = request.match(/<(?:\w+:)?AcceptableResponseSchema>\s*([^<\s]+)\s*</);
    const outlookSchema = 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a';
    if (schema && schema[1] !== outlookSchema) {
        // Exchange ActiveSync (mobilesync) and other schemas: this server offers IMAP (and POP3).
        outlookError(r, 600, 'Invalid Request');
        return;
    }
    const protocol = (type, port, encryption) => [
        '      <Protocol>',
        `        <Type>${type}</Type>`,
        `        <Server>${xml(HOSTNAME)}</Server>`,
        `        <Port>${port}</Port>`,
        `        <LoginName>${xml(parsed.address)}</LoginName>`,
        '        <DomainRequired>off</DomainRequired>',
        '        <SPA>off</SPA>',
        `        <Encryption>${encryption}</Encryption>`,
        '        <AuthRequired>on</AuthRequired>',
        '      </Protocol>',
    ].join('\n');
    const body = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">',
        `  <Response xmlns="${outlookSchema}">`,
        '    <User>',
        `      <DisplayName>${xml(parsed.address)}</DisplayName>`,
        `      <AutoDiscoverSMTPAddress>${xml(parsed.address)}</AutoDiscoverSMTPAddress>`,
        '    </User>',
        '    <Account>',
        '      <AccountType>email</AccountType>',
        '      <Action>settings</Action>',
        protocol('IMAP', IMAPS_PORT, 'SSL'),
        POP3S_PORT ? protocol('POP3', POP3S_PORT, 'SSL') : null,
        protocol('SMTP', SUBMISSIONS_PORT, 'SSL'),
        '    </Account>',
        '  </Response>',
        '</Autodiscover>',
        '',
    ].filter((line) => line !== null).join('\n');
    reply(r, 200, 'application/xml; charset=utf-8', body);
}

// A stable UUID per name: installing a profile again replaces the earlier one.
function uuidFor(name) {
    const hex = require('crypto').createHash('sha256').update(name).digest('hex');
    return [hex.slice(0, 8), hex.slice(8, 12), '5' + hex.slice(13, 16),
        '8' + hex.slice(17, 20), hex.slice(20, 32)].join('-').toUpperCase();
}

function apple(r) {
    const parsed = parseAddress(r.args.email || r.args.emailaddress);
    if (!parsed) {
        reply(r, 400, 'text/plain; charset=utf-8',
            'give the mail address: /mobileconfig?email=you@example.org\n');
        return;
    }
    const address = xml(parsed.address);
    const reversed = HOSTNAME.split('.').reverse().join('.');
    const entry = (key, value) => `      <key>${key}</key>\n      ${value}`;
    const account = [
        entry('EmailAccountDescription', `<string>${address}</string>`),
        entry('EmailAccountType', '<string>EmailTypeIMAP</string>'),
        entry('EmailAddress', `<string>${address}</string>`),
        entry('IncomingMailServerAuthentication', '<string>EmailAuthPassword</string>'),
        entry('IncomingMailServerHostName', `<string>${xml(HOSTNAME)}</string>`),
        entry('IncomingMailServerPortNumber', `<integer>${IMAPS_PORT}</integer>`),
        entry('IncomingMailServerUseSSL', '<true/>'),
        entry('IncomingMailServerUsername', `<string>${address}</string>`),
        entry('OutgoingMailServerAuthentication', '<string>EmailAuthPassword</string>'),
        entry('OutgoingMailServerHostName', `<string>${xml(HOSTNAME)}</string>`),
        entry('OutgoingMailServerPortNumber', `<integer>${SUBMISSIONS_PORT}</integer>`),
        entry('OutgoingMailServerUseSSL', '<true/>'),
        entry('OutgoingMailServerUsername', `<string>${address}</string>`),
        entry('OutgoingPasswordSameAsIncomingPassword', '<true/>'),
        entry('PayloadDescription', `<string>Mail account ${address}</string>`),
        entry('PayloadDisplayName', `<string>${address}</string>`),
        entry('PayloadIdentifier', `<string>${xml(reversed)}.mail.account.${uuidFor('account ' + parsed.address)}</string>`),
        entry('PayloadType', '<string>com.apple.mail.managed</string>'),
        entry('PayloadUUID', `<string>${uuidFor('account ' + parsed.address)}</string>`),
        entry('PayloadVersion', '<integer>1</integer>'),
        entry('SMIMEEnabled', '<false/>'),
    ].join('\n');
    // Calendars and contacts (features.dav): the same host and sign-in, over HTTPS.
    const dav = (kind, type) => [
        entry(`${kind}AccountDescription`, `<string>${address}</string>`),
        entry(`${kind}HostName`, `<string>${xml(HOSTNAME)}</string>`),
        entry(`${kind}Port`, `<integer>${HTTPS_PORT}</integer>`),
        entry(`${kind}PrincipalURL`, `<string>/dav/${xml(parsed.address.toLowerCase())}/</string>`),
        entry(`${kind}UseSSL`, '<true/>'),
        entry(`${kind}Username`, `<string>${address}</string>`),
        entry('PayloadDescription', `<string>${kind} account ${address}</string>`),
        entry('PayloadDisplayName', `<string>${address}</string>`),
        entry('PayloadIdentifier', `<string>${xml(reversed)}.${kind.toLowerCase()}.${uuidFor(kind + ' ' + parsed.address)}</string>`),
        entry('PayloadType', `<string>${type}</string>`),
        entry('PayloadUUID', `<string>${uuidFor(kind + ' ' + parsed.address)}</string>`),
        entry('PayloadVersion', '<integer>1</integer>'),
    ].join('\n');
    const payloads = [account];
    if (DAV) {
        payloads.push(dav('CalDAV', 'com.apple.caldav.account'),
            dav('CardDAV', 'com.apple.carddav.account'));
    }
    const top = (key, value) => `  <key>${key}</key>\n  ${value}`;
    const body = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
        '<plist version="1.0">',
        '<dict>',
        '  <key>PayloadContent</key>',
        '  <array>',
        payloads.map((payload) => `    <dict>\n${payload}\n    </dict>`).join('\n'),
        '  </array>',
        top('PayloadDescription', `<string>Mail settings of ${address} on ${xml(HOSTNAME)}</string>`),
        top('PayloadDisplayName', `<string>Mail ${address}</string>`),
        top('PayloadIdentifier', `<string>${xml(reversed)}.mail.${uuidFor('profile ' + parsed.address)}</string>`),
        top('PayloadRemovalDisallowed', '<false/>'),
        top('PayloadType', '<string>Configuration</string>'),
        top('PayloadUUID', `<string>${uuidFor('profile ' + parsed.address)}</string>`),
        top('PayloadVersion', '<integer>1</integer>'),
        '</dict>',
        '</plist>',
        '',
    ].join('\n');
    r.headersOut['Content-Disposition'] = `attachment; filename="${HOSTNAME}.mobileconfig"`;
    reply(r, 200, 'application/x-apple-aspen-config', body);
}

export default { thunderbird, outlook, apple };
