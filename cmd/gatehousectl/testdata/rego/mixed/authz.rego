package example.authz

import data.gatehouse.lib

default allow := false

allow if lib.header("X-Allow") == "yes"
