module github.com/superradcompany/microsandbox/sdk/go

go 1.22
