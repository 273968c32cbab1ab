package main

import "errors"

// startMock will start claudepooltest's mock of the Messages API once that
// package is on main.
func startMock() (env []string, stop func(), err error) {
	return nil, nil, errors.New("-mock: package claudepooltest is not merged yet")
}
