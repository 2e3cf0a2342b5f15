package api

import (
	"bytes"
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/reconcile"
	"github.com/anneal-dev/anneal/reconcile/node"
	"go.yaml.in/yaml/v3"
)

const operationsDoc = "../docs/operations.md"

// ruleFile is a Prometheus rule file, as much of it as the test reads.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// alertRulesBlock returns the one ```yaml block of docs/operations.md that
// is a rule file (it has groups), parsed.
func alertRulesBlock(t *testing.T) (string, ruleFile) {
	t.Helper()
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	rest := string(doc)
	for {
		_, after, ok := strings.Cut(rest, "\n```yaml\n")
		if !ok {
			break
		}
		block, after, ok := strings.Cut(after, "\n```")
		if !ok {
			t.Fatalf("%s: a ```yaml block is not closed", operationsDoc)
		}
		rest = after
		var rf ruleFile
		if yaml.Unmarshal([]byte(block), &rf) == nil && len(rf.Groups) > 0 {
			blocks = append(blocks, block+"\n")
		}
	}
	if len(blocks) != 1 {
		t.Fatalf("%s has %d YAML blocks of alert rules, want 1", operationsDoc, len(blocks))
	}
	var rf ruleFile
	if err := yaml.Unmarshal([]byte(blocks[0]), &rf); err != nil {
		t.Fatal(err)
	}
	return blocks[0], rf
}

// rulesUnitTest is promtool's unit test of the rules: three daemons (a,
// b, c) whose series make some alerts fire on a and not on the others,
// and not too early. Each expected alert gets its rule's annotations
// (exp_annotations is compared; ANNOTATIONS is replaced).
const rulesUnitTest = `rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # a: a plan waits since 00:01; b: since 02:46 (under 4 h at 05:00);
      # c: none waits.
      - {series: 'anneal_pending_approval{job="anneal",instance="a"}', values: '1x400'}
      - {series: 'anneal_pending_approval_since_timestamp_seconds{job="anneal",instance="a"}', values: '60x400'}
      - {series: 'anneal_pending_approval{job="anneal",instance="b"}', values: '1x400'}
      - {series: 'anneal_pending_approval_since_timestamp_seconds{job="anneal",instance="b"}', values: '10000x400'}
      - {series: 'anneal_pending_approval{job="anneal",instance="c"}', values: '0x400'}
      - {series: 'anneal_pending_approval_since_timestamp_seconds{job="anneal",instance="c"}', values: '0x400'}
      # Applied at 00:01 and drift since on a and b; b is suspended; c
      # never applied (report mode).
      - {series: 'anneal_last_apply_timestamp_seconds{job="anneal",instance="a"}', values: '60x400'}
      - {series: 'anneal_last_apply_timestamp_seconds{job="anneal",instance="b"}', values: '60x400'}
      - {series: 'anneal_last_apply_timestamp_seconds{job="anneal",instance="c"}', values: '0x400'}
      - {series: 'anneal_drift{job="anneal",instance="a",kind="rebuild"}', values: '3x400'}
      - {series: 'anneal_drift{job="anneal",instance="b",kind="rebuild"}', values: '3x400'}
      - {series: 'anneal_drift{job="anneal",instance="c",kind="update"}', values: '5x400'}
      - {series: 'anneal_drift{job="anneal",instance="a",kind="conflict"}', values: '0x400'}
      - {series: 'anneal_suspended{job="anneal",instance="a"}', values: '0x400'}
      - {series: 'anneal_suspended{job="anneal",instance="b"}', values: '1x400'}
      - {series: 'anneal_suspended{job="anneal",instance="c"}', values: '0x400'}
      # Two nodes fail on a from 00:02; none on b.
      - {series: 'anneal_nodes{job="anneal",instance="a",state="failed"}', values: '0 0 2x400'}
      - {series: 'anneal_nodes{job="anneal",instance="b",state="failed"}', values: '0x400'}
      # a's rollout halted; b's runs and makes progress.
      - {series: 'anneal_rollout_halted{job="anneal",instance="a"}', values: '1x400'}
      - {series: 'anneal_rollout_running{job="anneal",instance="a"}', values: '0x400'}
      - {series: 'anneal_rollout_halted{job="anneal",instance="b"}', values: '0x400'}
      - {series: 'anneal_rollout_running{job="anneal",instance="b"}', values: '1x400'}
      - {series: 'anneal_rollout_nodes_done{job="anneal",instance="b"}', values: '0+1x400'}
      - {series: 'up{job="anneal",instance="a"}', values: '1x400'}
    alert_rule_test:
      - eval_time: 3h
        alertname: AnnealApprovalPending
        exp_alerts: []
      - eval_time: 5h
        alertname: AnnealApprovalPending
        exp_alerts:
          - exp_labels: {job: anneal, instance: a}
            exp_annotations: ANNOTATIONS(AnnealApprovalPending)
      - eval_time: 6h
        alertname: AnnealNotApplying
        exp_alerts: []
      - eval_time: 6h30m
        alertname: AnnealNotApplying
        exp_alerts:
          - exp_labels: {job: anneal, instance: a}
            exp_annotations: ANNOTATIONS(AnnealNotApplying)
      - eval_time: 30m
        alertname: AnnealNodesFailed
        exp_alerts:
          - exp_labels: {job: anneal, instance: a, state: failed}
            exp_annotations: ANNOTATIONS(AnnealNodesFailed)
      - eval_time: 30m
        alertname: AnnealRolloutHalted
        exp_alerts:
          - exp_labels: {job: anneal, instance: a}
            exp_annotations: ANNOTATIONS(AnnealRolloutHalted)
      - eval_time: 5h
        alertname: AnnealRolloutStalled
        exp_alerts: []
      - eval_time: 5h
        alertname: AnnealConflicts
        exp_alerts: []
      - eval_time: 5h
        alertname: AnnealDown
        exp_alerts: []
`

var annotationsRef = regexp.MustCompile(`ANNOTATIONS\((\w+)\)`)

// TestAlertRules: the alert rules of docs/operations.md are valid
// (promtool check rules), fire when they should and not otherwise
// (promtool test rules), and name only metrics /metrics serves.
func TestAlertRules(t *testing.T) {
	block, rules := alertRulesBlock(t)

	// Every anneal_ metric the rules name is in a real scrape.
	m := NewMetrics()
	s := loadExample(t)
	n := s.Nodes[0]
	h := New(Config{Reconciler: &fakeReconciler{site: s}, Metrics: m,
		Nodes: fakeNodes{recs: map[string]*node.Record{n.Name: {Name: n.Name, State: node.Failed}}}})
	m.Observe(reconcile.Status{LastErrorClass: reconcile.FailApply, AppliedRevision: "r1", LastGoodRevision: "r1"}, time.Second)
	_, families := scrape(t, h)
	name := regexp.MustCompile(`\banneal_[a-z0-9_]+`)
	annotations := map[string]map[string]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			annotations[r.Alert] = r.Annotations
			for _, metric := range name.FindAllString(r.Expr, -1) {
				base := metric
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(metric, suffix); ok && families[b] {
						base = b
					}
				}
				if !families[base] {
					t.Errorf("alert %s uses %s, which /metrics does not serve", r.Alert, metric)
				}
			}
		}
	}

	promtool := testenv.LookPath(t, "promtool", "prometheus")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	var unitErr error
	unit := annotationsRef.ReplaceAllStringFunc(rulesUnitTest, func(ref string) string {
		alert := annotationsRef.FindStringSubmatch(ref)[1]
		a, ok := annotations[alert]
		if !ok {
			t.Errorf("the unit test expects alert %s, which the rules lack", alert)
		}
		if slices.ContainsFunc(slices.Collect(maps.Values(a)), func(v string) bool { return strings.Contains(v, "{{") }) {
			t.Errorf("alert %s: its annotations are templates, which this test does not expand", alert)
		}
		out, err := yaml.Marshal(a)
		if err != nil {
			unitErr = err
		}
		// A flow mapping on one line, as the test's YAML expects.
		var doc yaml.Node
		if err := yaml.Unmarshal(out, &doc); err == nil && len(doc.Content) > 0 {
			doc.Content[0].Style = yaml.FlowStyle
			out, err = yaml.Marshal(doc.Content[0])
			if err != nil {
				unitErr = err
			}
		}
		return strings.TrimSpace(string(out))
	})
	if unitErr != nil {
		t.Fatal(unitErr)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules_test.yml"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "rules.yml"}, {"test", "rules", "rules_test.yml"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		cmd := exec.CommandContext(ctx, promtool, args...)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
		}
	}
}
