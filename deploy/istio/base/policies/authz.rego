# The entry point Gatehouse evaluates (policy.decision: envoy/authz/allow).
#
# This module keeps the built-in decision: a valid token from a configured
# provider is required (401 without one), and the headers and bypass rules of
# the configuration apply. Write your rules around it; docs/policies.md shows
# how, and `gatehousectl policy test` runs *_test.rego files beside it.
package envoy.authz

allow := data.gatehouse.authz.decision
