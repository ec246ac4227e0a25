-- The limit per client address (policy.rate_limits.client_ip_* in mailstack.yaml), loaded by
-- ratelimit.conf. It counts messages sent without SMTP authentication, i.e. inbound mail:
-- authenticated senders have their own limit, so people behind one office address are never
-- limited together. The stack's own addresses (local_addrs) are not limited.
return {
{% if config.policy.rate_limits.client_ip_burst > 0 %}
  client_ip = function(task)
    if task:get_user() then
      return nil
    end
    local ip = task:get_from_ip()
    if not ip or not ip:is_valid() or ip:is_local() then
      return nil
    end
    return string.format('client_ip:{{ config.policy.rate_limits.client_ip_burst }}:%s', tostring(ip)), {
      burst = {{ config.policy.rate_limits.client_ip_burst }},
      rate = '{{ config.policy.rate_limits.client_ip_per_hour }} / 1h',
      skip_recipients = true,
      message = 'Too many messages from this address; try again later',
    }
  end,
{% endif %}
}
