//go:build !linux

package main

// runAsInit: the deploy environment is Linux only.
func runAsInit() {}
