module github.com/vito/midterm

go 1.26.1

require github.com/muesli/termenv v0.16.0
