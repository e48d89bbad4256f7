package jwt

import (
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ProviderKeys are the key ids of one provider's current key set.
type ProviderKeys struct {
	Name string
	// KeyIDs are the kids of the usable keys, sorted; a key without kid is "".
	KeyIDs []string
}

// Keys returns each provider's current key ids, in configuration order, for
// the admin API. A provider without keys yet has none.
func (v *Verifier) Keys() []ProviderKeys {
	out := make([]ProviderKeys, 0, len(v.providers))
	for _, p := range v.providers {
		pk := ProviderKeys{Name: p.name}
		if ks := p.keys.Load(); ks != nil {
			for _, k := range ks.keys {
				pk.KeyIDs = append(pk.KeyIDs, k.kid)
			}
			sort.Strings(pk.KeyIDs)
		}
		out = append(out, pk)
	}
	return out
}

// CacheLen returns the number of entries in the verified-token cache (0 when
// it is disabled).
func (v *Verifier) CacheLen() int {
	if v.cache == nil {
		return 0
	}
	return v.cache.len()
}

// Collector returns the Verifier's Prometheus metrics, read from Stats at
// scrape time, so verification itself pays nothing for them:
//
//	gatehouse_jwks_fetches_total{provider, result}          success|failure
//	gatehouse_jwks_unknown_kid_refetches_total{provider}
//	gatehouse_jwks_keys{provider}
//	gatehouse_jwks_ready{provider}
//	gatehouse_jwks_last_refresh_timestamp_seconds{provider} last good key set
//	gatehouse_jwks_refresh_age_seconds{provider}            seconds since then
//	gatehouse_jwks_refresh_interval_seconds{provider}       refresh_interval
//	gatehouse_jwt_token_cache_requests_total{result}        hit|miss
//	gatehouse_jwt_token_cache_entries
//	gatehouse_jwt_token_cache_evictions_total{cause}       size|expired
func (v *Verifier) Collector() prometheus.Collector {
	return &verifierCollector{
		v:       v,
		fetches: prometheus.NewDesc("gatehouse_jwks_fetches_total", "JWKS, discovery and jwks_file reads by result (failure: network error, timeout, non-200, oversize or unusable JWKS).", []string{"provider", "result"}, nil),
		refetch: prometheus.NewDesc("gatehouse_jwks_unknown_kid_refetches_total", "JWKS refetches triggered by a token whose kid was not in the key set.", []string{"provider"}, nil),
		keys:    prometheus.NewDesc("gatehouse_jwks_keys", "Usable keys in the provider's current key set.", []string{"provider"}, nil),
		ready:   prometheus.NewDesc("gatehouse_jwks_ready", "1 once the provider holds a key set, else 0.", []string{"provider"}, nil),
		last:    prometheus.NewDesc("gatehouse_jwks_last_refresh_timestamp_seconds", "When the provider's last good key set was installed, in Unix seconds (0 before the first).", []string{"provider"}, nil),
		age:     prometheus.NewDesc("gatehouse_jwks_refresh_age_seconds", "Seconds since the provider's last good key set was installed (absent before the first).", []string{"provider"}, nil),
		every:   prometheus.NewDesc("gatehouse_jwks_refresh_interval_seconds", "The provider's configured refresh_interval: a key set much older than this is stale.", []string{"provider"}, nil),
		cache:   prometheus.NewDesc("gatehouse_jwt_token_cache_requests_total", "Verified-token cache lookups by result (hit, miss).", []string{"result"}, nil),
		entries: prometheus.NewDesc("gatehouse_jwt_token_cache_entries", "Entries in the verified-token cache.", nil, nil),
		evicted: prometheus.NewDesc("gatehouse_jwt_token_cache_evictions_total", "Entries removed from the verified-token cache, by cause (size: to stay within cache_size; expired: past the token's exp).", []string{"cause"}, nil),
	}
}

type verifierCollector struct {
	v                                                                        *Verifier
	fetches, refetch, keys, ready, last, age, every, cache, entries, evicted *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (c *verifierCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.fetches, c.refetch, c.keys, c.ready, c.last, c.age, c.every, c.cache, c.entries, c.evicted} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *verifierCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.v.Stats()
	now := time.Now()
	for i, p := range s.Providers {
		if i < len(c.v.providers) {
			ch <- prometheus.MustNewConstMetric(c.every, prometheus.GaugeValue, c.v.providers[i].refreshInterval.Seconds(), p.Name)
		}
		ok := p.Fetches - min(p.FetchFailures, p.Fetches)
		ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(ok), p.Name, "success")
		ch <- prometheus.MustNewConstMetric(c.fetches, prometheus.CounterValue, float64(p.FetchFailures), p.Name, "failure")
		ch <- prometheus.MustNewConstMetric(c.refetch, prometheus.CounterValue, float64(p.UnknownKidRefetches), p.Name)
		ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(p.Keys), p.Name)
		ready, last := 0.0, 0.0
		if p.Ready {
			ready, last = 1, float64(p.Updated.UnixNano())/1e9
			ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, now.Sub(p.Updated).Seconds(), p.Name)
		}
		ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, ready, p.Name)
		ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, last, p.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.cache, prometheus.CounterValue, float64(s.CacheHits), "hit")
	ch <- prometheus.MustNewConstMetric(c.cache, prometheus.CounterValue, float64(s.CacheMisses), "miss")
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(c.v.CacheLen()))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.CacheEvictions), "size")
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.CacheExpirations), "expired")
}
