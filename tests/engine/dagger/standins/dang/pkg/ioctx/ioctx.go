// Package ioctx is part of a stand-in for github.com/vito/dang/v2: it
// carries stdout/stderr writers in a context.
package ioctx

import (
	"context"
	"io"
)

type stdoutKey struct{}
type stderrKey struct{}

// StdoutToContext stores w as the stdout writer.
func StdoutToContext(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, stdoutKey{}, w)
}

// StderrToContext stores w as the stderr writer.
func StderrToContext(ctx context.Context, w io.Writer) context.Context {
	return context.WithValue(ctx, stderrKey{}, w)
}

// StdoutFromContext returns the stdout writer (io.Discard if unset).
func StdoutFromContext(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(stdoutKey{}).(io.Writer); ok {
		return w
	}
	return io.Discard
}

// StderrFromContext returns the stderr writer (io.Discard if unset).
func StderrFromContext(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(stderrKey{}).(io.Writer); ok {
		return w
	}
	return io.Discard
}
