//go:build !unix

package main

import "os"

// maxRSS is not available without getrusage; the table then shows 0.
func maxRSS(*os.ProcessState) int64 { return 0 }
