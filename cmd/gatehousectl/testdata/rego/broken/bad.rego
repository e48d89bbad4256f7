package example.broken

allow if {
	input.x ==
}
