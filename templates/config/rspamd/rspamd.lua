-- Loaded by rspamd from local.d/rspamd.lua: mailstack's own rules.

-- Authenticated mail (submission on 587 and 465, the webmail) must show in its From: header
-- exactly the envelope sender, which Postfix has already tied to the login (the login
-- itself or an address granted with `mailstack alias sender add`). Anything else, another
-- address of a hosted domain included, is refused before it could be signed as that domain.
rspamd_config:register_symbol({
  name = 'MAILSTACK_FROM_NOT_SENDER',
  type = 'prefilter',
  priority = 10,
  flags = 'empty,nostat',
  group = 'mailstack',
  description = 'authenticated mail whose From: header is not its envelope sender',
  callback = function(task)
    if not task:get_user() then
      return false
    end
    local envelope = task:get_from('smtp')
    local header = task:get_from('mime')
    local sender = (envelope and envelope[1] and envelope[1].addr) or ''
    if sender ~= '' and header and #header == 1 and header[1].addr
        and header[1].addr:lower() == sender:lower() then
      return false
    end
    task:set_pre_result('reject',
      'From: must be the address you send as (' .. sender .. '), one address only', 'mailstack')
    return true
  end,
})

-- Mail from outside that names a domain hosted here as its envelope sender or in its From:
-- header (hosted_domains.map); force_actions.conf refuses it unless DMARC passes.
local hosted_domains = rspamd_config:add_map({
  type = 'set',
  url = '/etc/rspamd/local.d/hosted_domains.map',
  description = 'mailstack: the mail domains of this stack',
})

rspamd_config:register_symbol({
  name = 'MAILSTACK_HOSTED_SENDER',
  score = 0.0,
  group = 'mailstack',
  description = 'unauthenticated mail from outside claiming a domain hosted here',
  callback = function(task)
    if task:get_user() then
      return false
    end
    local ip = task:get_from_ip()
    if ip and ip:is_valid() and ip:is_local() then
      return false
    end
    local claimed = {}
    for _, kind in ipairs({ 'smtp', 'mime' }) do
      for _, address in ipairs(task:get_from(kind) or {}) do
        if address.domain and address.domain ~= '' then
          table.insert(claimed, address.domain:lower())
        end
      end
    end
    for _, domain in ipairs(claimed) do
      if hosted_domains and hosted_domains:get_key(domain) then
        return true, domain
      end
    end
    return false
  end,
})

-- Mail Dovecot sends (Sieve vacation replies and redirects, from its fixed back-end address,
-- trusted as local and signed) may show a hosted address in its From: header only when it is
-- the envelope sender: for a reply Dovecot sets that to the owner's address
-- (sieve_vacation_send_from_recipient), so `vacation :from "ceo@..."` is refused.
rspamd_config:register_symbol({
  name = 'MAILSTACK_SIEVE_FROM_NOT_OWNER',
  type = 'prefilter',
  priority = 10,
  flags = 'empty,nostat',
  group = 'mailstack',
  description = 'a Sieve reply or redirect whose hosted From: is not its envelope sender',
  callback = function(task)
    local ip = task:get_from_ip()
{% if links.dovecot_postfix.prefix == 32 %}
    if task:get_user() or not ip or tostring(ip) ~= '{{ links.dovecot_postfix.address }}' then
{% else %}
    -- A cluster: Dovecot's link network (docs/cluster.md), which it and Postfix alone join.
    if task:get_user() or not ip or not ip:is_valid()
        or tostring(ip:apply_mask({{ links.dovecot_postfix.prefix }})) ~= '{{ links.dovecot_postfix.address }}' then
{% endif %}
      return false
    end
    local envelope = task:get_from('smtp')
    local sender = ((envelope and envelope[1] and envelope[1].addr) or ''):lower()
    for _, address in ipairs(task:get_from('mime') or {}) do
      local domain = (address.domain or ''):lower()
      if hosted_domains and hosted_domains:get_key(domain) and address.addr:lower() ~= sender then
        task:set_pre_result('reject',
          'a Sieve reply may only be sent from its owner\'s address', 'mailstack')
        return true
      end
    end
    return false
  end,
})
