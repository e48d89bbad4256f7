package example.authz_test

import data.example.authz

test_allows_with_header if {
	print("checking x-allow")
	authz.allow with input as {"attributes": {"request": {"http": {"headers": {"x-allow": "yes"}}}}}
}

test_denies_without_header if {
	not authz.allow with input as {"attributes": {"request": {"http": {"headers": {}}}}}
}

todo_test_later if {
	false
}
