package envoy.authz

default allow := false

allow if input.method == "GET"

allow if gatehouse.cidr_contains(data.trusted, input.ip)
