module github.com/superradcompany/microsandbox/bench/go

go 1.22

require github.com/superradcompany/microsandbox/sdk/go v0.0.0

replace github.com/superradcompany/microsandbox/sdk/go => ../../sdk-go
