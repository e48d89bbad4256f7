# METADATA
# title: Envoy entry point for the default policy
# description: |
#   OPA-Envoy's conventional decision path (data.envoy.authz.allow) answering
#   Gatehouse's default decision. The engine loads this shim only when no
#   policy.paths are configured; a user policy defines its own
#   data.envoy.authz.allow (or another policy.decision) and may delegate to
#   data.gatehouse.authz.decision.
package envoy.authz

allow := data.gatehouse.authz.decision
