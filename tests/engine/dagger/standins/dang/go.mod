module github.com/vito/dang/v2

go 1.26.1

require github.com/Khan/genqlient v0.8.1
