// Package etcd only pins the etcd server used by the tests (see README.md);
// it has no code.
package etcd
