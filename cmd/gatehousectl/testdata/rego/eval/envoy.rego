package envoy.authz

import data.gatehouse.lib

default allow := {
	"allowed": false,
	"http_status": 401,
	"body": "who are you?",
	"headers": {"www-authenticate": "Bearer"},
	"reason": "token_missing",
}

allow := {
	"allowed": true,
	"headers": {"x-user": "alice"},
	"request_headers_to_remove": ["x-debug"],
	"query_parameters_to_set": {"tenant": "acme"},
	"dynamic_metadata": {"user": "alice"},
	"reason": "ok",
} if lib.header("x-allow") == "yes"

wrong_type := "yes"
