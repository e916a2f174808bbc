package certs

import (
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// descDaysLeft is the one metric the Manager exports (it is a
// prometheus.Collector: the server registers it with the others).
var descDaysLeft = prometheus.NewDesc("mamori_tls_certificate_days_left",
	"Days until the certificate served for a name expires: source acme (issued, renewed automatically) or file (the [tls] pair).",
	[]string{"name", "source"}, nil)

// Describe implements prometheus.Collector.
func (m *Manager) Describe(ch chan<- *prometheus.Desc) { ch <- descDaysLeft }

// Collect implements prometheus.Collector: one series per issued ACME
// name, and one for the [tls] pair.
func (m *Manager) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	days := func(leaf *x509.Certificate) float64 { return leaf.NotAfter.Sub(now).Hours() / 24 }
	for _, h := range m.order {
		if !h.issued.Load() {
			continue
		}
		if c, err := h.cert(); err == nil && c.Leaf != nil {
			ch <- prometheus.MustNewConstMetric(descDaysLeft, prometheus.GaugeValue, days(c.Leaf), h.name, "acme")
		}
	}
	if c := m.fallback.Load(); c != nil {
		name := c.Leaf.Subject.CommonName
		if len(c.Leaf.DNSNames) > 0 {
			name = c.Leaf.DNSNames[0]
		}
		ch <- prometheus.MustNewConstMetric(descDaysLeft, prometheus.GaugeValue, days(c.Leaf), name, "file")
	}
}
