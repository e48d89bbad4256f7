package envoy.authz

default allow := false

allow if input.user in data.acl.users

allow if input.client_ip in data.gatehouse.config.bypass.trusted_ips

allow if input.tier == data.tiers.gold
