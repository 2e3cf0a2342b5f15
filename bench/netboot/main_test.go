package main

import (
	"testing"
	"time"
)

const perfdhcpSample = `Running: perfdhcp -4 -l nbc1 -r 500 -p 3 -M macs.txt
***Rate statistics***
Rate: 499.574 4-way exchanges/second, expected rate: 500

***Statistics for: DISCOVER-OFFER***
sent packets: 1499
received packets: 1497
drops: 2
avg delay: 0.135 ms

***Statistics for: REQUEST-ACK***
sent packets: 1497
received packets: 1497
drops: 0
avg delay: 0.112 ms
`

func TestParsePerfdhcp(t *testing.T) {
	p, err := parsePerfdhcp(perfdhcpSample)
	if err != nil {
		t.Fatal(err)
	}
	want := perfResult{Rate: 499.574,
		DO: perfExchange{Sent: 1499, Received: 1497, Drops: 2, AvgMS: 0.135},
		RA: perfExchange{Sent: 1497, Received: 1497, Drops: 0, AvgMS: 0.112}}
	if p != want {
		t.Errorf("got %+v, want %+v", p, want)
	}
	if _, err := parsePerfdhcp("no report"); err == nil {
		t.Error("a report without a rate parsed")
	}
}

func TestScriptArgs(t *testing.T) {
	script := "#!ipxe\nkernel --name vmlinuz http://x/vmlinuz initrd=initrd anneal.node=n1 anneal.build=b1 anneal.url=http://a anneal.token=t.s autoinstall ds=nocloud-net;s=http://a/install/n1/t.s/ || goto failed\n"
	token, build, file := scriptArgs(script)
	if token != "t.s" || build != "b1" || file != "user-data" {
		t.Errorf("got %q %q %q", token, build, file)
	}
	if token, _, _ := scriptArgs("#!ipxe\necho anneal: n1 is not armed\nexit\n"); token != "" {
		t.Errorf("an exit script gave token %q", token)
	}
}

func TestPct(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	if pct(ds, 0.5) != 50 || pct(ds, 0.99) != 99 || pct(ds, 1) != 100 || pct(nil, 0.5) != 0 {
		t.Errorf("p50 %v p99 %v max %v", pct(ds, 0.5), pct(ds, 0.99), pct(ds, 1))
	}
}
