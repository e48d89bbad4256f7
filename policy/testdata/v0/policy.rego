package envoy.authz

# Rego v0 syntax, as many published OPA-Envoy policies still are: no `if`.
default allow = false

allow {
	input.attributes.request.http.method == "GET"
}
