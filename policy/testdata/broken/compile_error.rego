package envoy.authz

allow if {
	no_such_function(input.x)
}
