package claudepool

// FakeCLI returns the path of the fake CLI built by TestMain, for the
// examples in package claudepool_test.
func FakeCLI() string { return fakeCLI }
