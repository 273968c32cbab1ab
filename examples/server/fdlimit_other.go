//go:build !unix

package main

// openFileLimit reports that the open-file limit is not known here.
func openFileLimit() (uint64, bool) { return 0, false }
