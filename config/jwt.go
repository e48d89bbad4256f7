package config

import "github.com/gatehouse-dev/gatehouse/authz/jwt"

// Options maps the jwt section onto the verifier's options, field for field:
// zero values stay zero so that each default is applied in one place, by
// authz/jwt. The caller adds the runtime dependencies (Logger, HTTPClient).
func (c JWT) Options() jwt.Options {
	opts := jwt.Options{
		ClockSkew:     c.ClockSkew.D(),
		MaxTokenBytes: c.MaxTokenBytes,
		CacheSize:     c.CacheSize,
	}
	for _, p := range c.Providers {
		jp := jwt.Provider{
			Name:             p.Name,
			Issuer:           p.Issuer,
			Audiences:        p.Audiences,
			AllowAnyAudience: p.AllowAnyAudience,
			JWKSURI:          p.JWKSURI,
			JWKSFile:         p.JWKSFile,
			Discovery:        p.Discovery,
			FromParams:       p.FromParams,
			FromCookies:      p.FromCookies,
			ForwardToken:     p.ForwardToken,
			PayloadHeader:    p.PayloadHeader,
			Algorithms:       p.Algorithms,

			RefreshInterval:    p.RefreshInterval.D(),
			MinRefreshInterval: p.MinRefreshInterval.D(),
			FetchTimeout:       p.FetchTimeout.D(),
			MaxJWKSBytes:       p.MaxJWKSBytes,
			CAFile:             p.CAFile,
			RedirectHosts:      p.RedirectHosts,
		}
		for _, h := range p.FromHeaders {
			jp.FromHeaders = append(jp.FromHeaders, jwt.TokenHeader{Name: h.Name, Prefix: h.Prefix})
		}
		for _, ch := range p.ClaimToHeaders {
			jp.ClaimToHeaders = append(jp.ClaimToHeaders, jwt.ClaimToHeader{Claim: ch.Claim, Header: ch.Header})
		}
		opts.Providers = append(opts.Providers, jp)
	}
	return opts
}
