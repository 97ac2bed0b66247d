module github.com/vito/tuist/teav1

go 1.26.1

require (
	github.com/charmbracelet/bubbletea v1.3.10
	github.com/charmbracelet/ultraviolet v0.0.0-20260309091805-903bfd0cf188
	github.com/vito/tuist v0.0.6
)
