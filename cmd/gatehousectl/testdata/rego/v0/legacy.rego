package legacy

default allow = false

allow {
	input.user == "alice"
}

test_alice {
	allow with input as {"user": "alice"}
}
