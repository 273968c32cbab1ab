package fakecli

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// Main is the TestMain of a test package that runs the fake CLI:
//
//	func TestMain(m *testing.M) { fakecli.Main(m, &fakeCLI) }
//
// It builds the fake into a temporary directory and stores the executable's
// path in *path, then runs the tests, fails the run if they leave a goroutine
// behind (goleak), removes the build and exits. When the build fails it
// prints the error and exits with status 1 without running any test.
func Main(m *testing.M, path *string) {
	p, cleanup, err := BuildTemp()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*path = p
	// goleak calls the Cleanup function instead of os.Exit: pass the exit
	// code on, or a leak would be reported but not fail the run.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		cleanup()
		os.Exit(code)
	}))
}
