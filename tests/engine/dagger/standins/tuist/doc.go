// Package tuist is a small, headless stand-in for github.com/vito/tuist,
// written for builds of dagger where the real module is not available
// from the Go module proxy.
//
// It keeps the component model (Compo, Component, Container, lifecycle
// hooks) and renders component trees to plain lines on demand
// (TUI.RenderLines), which is what dagger's final report needs. It does
// NOT drive a live terminal: Start never reads keyboard input or repaints
// the screen. Programs should prefer a plain progress mode.
package tuist

import "errors"

// ErrNoLiveTUI is reported when something needs the interactive renderer.
var ErrNoLiveTUI = errors.New("the interactive terminal UI (tuist) is not available in this build; use --progress=plain")
