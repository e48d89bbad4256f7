package envoy.authz_test

import data.envoy.authz

test_get_allowed if {
	print("checking GET")
	authz.allow with input as {"method": "GET"}
}

test_trusted_ip_allowed if {
	authz.allow with input as {"method": "POST", "ip": "10.1.2.3"}
}

test_post_allowed_fails if {
	authz.allow with input as {"method": "POST", "ip": "192.0.2.1"}
}

todo_test_later if {
	false
}
