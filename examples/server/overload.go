package main

import "github.com/claudepool/claudepool"

// isOverloaded reports that the pool shed the request instead of queueing
// it.
func isOverloaded(err error) bool { return false }

// healthReason returns why the pool's health makes the server unready, or
// "".
func healthReason(st claudepool.Stats) string { return "" }

// configureShedding bounds the callers that wait for a process.
func configureShedding(cfg *claudepool.Config) {}
