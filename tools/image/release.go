package main

import (
	"context"
	"errors"
	"io"
)

type releaseOptions struct {
	out      string
	chartDir string
}

func release(ctx context.Context, o buildOptions, r releaseOptions, stdout io.Writer) error {
	return errors.New("not yet")
}
