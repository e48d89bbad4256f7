package envoy.authz

allow := true if {
	input.x ==
}
