package example.authz_test

import data.example.authz

test_allows_with_header if {
	authz.allow with input as {"attributes": {"request": {"http": {"headers": {"x-allow": "yes"}}}}}
}

# Fails on purpose: the policy denies without the header.
test_allows_without_header if {
	authz.allow with input as {"attributes": {"request": {"http": {"headers": {}}}}}
}
