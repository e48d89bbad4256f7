//go:build !unix

package jwt

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
