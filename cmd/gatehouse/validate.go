package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gatehouse-dev/gatehouse/authz/jwt"
	"github.com/gatehouse-dev/gatehouse/config"
)

const validateUsage = `Usage: gatehouse validate [--config FILE] [--jwks]

Load the configuration and its policies exactly as the server does at start
(the file, its keys, the JWT providers, the client IP settings, the policies
and the shadow policy compiled, forward-auth), without listening, and report
every problem with its file, line or key, and the fix. Without --config it
checks the embedded defaults. It reaches no network unless --jwks is given;
then it fetches each JWT provider's key set once and reports each provider.

Exit codes: 0 the server would start with this configuration, 2 it would not
(or a usage error).

Flags:
`

// validate is `gatehouse validate`: build (the same function serve starts
// with) on the configuration, then stop. It prints problems on stderr and a
// one-line summary on stdout; see validateUsage.
func validate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gatehouse validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML); empty checks the embedded defaults")
	fetchJWKS := fs.Bool("jwks", false, "also fetch each JWT provider's JWKS once (jwks_uri, discovery) and report it")
	fs.Usage = func() {
		fmt.Fprint(stderr, validateUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args, stderr); !ok {
		return code
	}

	cfg := config.Default()
	source := "embedded defaults"
	if *configPath != "" {
		var err error
		if cfg, err = config.Load(*configPath); err != nil {
			printError(stderr, err)
			return 2
		}
		source = *configPath
	} else if err := cfg.Validate(); err != nil {
		printError(stderr, fmt.Errorf("embedded defaults: %w", err))
		return 2
	}

	// Warnings the server would log at start (a decision no rule defines,
	// network built-ins without policy.allow_net) are worth seeing here.
	logger := slog.New(withoutComponent{
		Handler: slog.NewTextHandler(stderr, &slog.HandlerOptions{
			Level:       slog.LevelWarn,
			ReplaceAttr: dropTime,
		}),
		// The JWKS fetches are reported per provider below (with --jwks),
		// or refused on purpose (without).
		component: "jwt",
	})
	bo := buildOptions{file: *configPath}
	if !*fetchJWKS {
		bo.jwksClient = offlineClient()
	}
	p, err := build(ctx, cfg, bo, logger, io.Discard)
	if err != nil {
		printError(stderr, err)
		return 2
	}
	defer p.tokens.Close()

	if *fetchJWKS && len(cfg.JWT.Providers) > 0 {
		if !reportJWKS(ctx, cfg, p.tokens.get(), stdout, stderr) {
			return 2
		}
	}
	fmt.Fprintln(stdout, summary(cfg, p, source))
	return 0
}

// printError prints err on stderr, its further lines (each further problem of
// a joined error, a compiler's excerpt of the source) indented under the first.
func printError(stderr io.Writer, err error) {
	msg := strings.ReplaceAll(strings.TrimRight(err.Error(), "\n"), "\n", "\n  ")
	fmt.Fprintf(stderr, "gatehouse validate: %s\n", msg)
}

// parseArgs parses a flag set that takes no positional arguments: Go's flag
// package stops at the first one, so anything after it (flags included)
// would be silently ignored. ok is false when the command must stop, with
// code its exit code (0 for -h, 2 for a mistake, the usage printed).
func parseArgs(fs *flag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false // the flag package printed the error and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q%s\n", fs.Name(), fs.Arg(0), argumentHint(fs, fs.Args()))
		fs.Usage()
		return 2, false
	}
	return 0, true
}

// argumentHint says why rest (the arguments from the first positional one
// on) is refused, and what was probably meant.
func argumentHint(fs *flag.FlagSet, rest []string) string {
	hint := ": " + fs.Name() + " takes flags only"
	if fs.Name() == "gatehouse" {
		hint += " (a subcommand comes first: gatehouse validate --config FILE, or gatehouse run --server ...)"
	}
	if len(rest) > 1 {
		hint += fmt.Sprintf("; what follows it would not have been read either: %s", strings.Join(rest[1:], " "))
	}
	return hint
}

// offlineClient is the JWKS client of validate without --jwks: building the
// verifier starts its first fetches in the background, and validate promises
// to reach no network, so every connection is refused before it is dialled.
func offlineClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("gatehouse validate reaches no network without --jwks")
		},
	}}
}

// reportJWKS waits for each JWT provider's first key set or first failed
// fetch (bounded by its fetch_timeout, twice with discovery) and prints one
// line per provider: on stdout when it has keys, on stderr when not. It
// reports whether every provider has keys.
func reportJWKS(ctx context.Context, cfg *config.Config, tokens *jwt.Verifier, stdout, stderr io.Writer) bool {
	wait := time.Duration(0)
	for _, pc := range cfg.JWT.Providers {
		d := pc.FetchTimeout.D()
		if d == 0 {
			d = jwt.DefaultFetchTimeout
		}
		if pc.Discovery {
			d *= 2 // the discovery document, then the JWKS
		}
		wait = max(wait, d)
	}
	ctx, cancel := context.WithTimeout(ctx, wait+time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !settled(tokens.Stats().Providers) && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}

	stats := tokens.Stats().Providers
	keys := tokens.Keys()
	ok := true
	for i, ps := range stats {
		pc := cfg.JWT.Providers[i]
		from := jwksSource(pc)
		switch {
		case ps.Ready:
			var kids []string
			if i < len(keys) {
				kids = keys[i].KeyIDs
			}
			fmt.Fprintf(stdout, "jwks %s: ok, %d usable keys (kid %s) from %s\n", ps.Name, ps.Keys, strings.Join(kids, ", "), from)
		case ps.LastError != "":
			ok = false
			fmt.Fprintf(stderr, "gatehouse validate: jwt.providers[%d] (%s): JWKS from %s: %s; the server would start but stay unready (no token verifies) until it succeeds: check the URL, the network path and the issuer's key set\n", i, ps.Name, from, ps.LastError)
		default:
			ok = false
			fmt.Fprintf(stderr, "gatehouse validate: jwt.providers[%d] (%s): JWKS from %s: no answer within %s; check the URL and the network path, or raise fetch_timeout\n", i, ps.Name, from, wait)
		}
	}
	return ok
}

// settled reports whether every provider has keys or has failed once.
func settled(providers []jwt.ProviderStats) bool {
	for _, ps := range providers {
		if !ps.Ready && ps.LastError == "" {
			return false
		}
	}
	return true
}

// jwksSource names where a provider's key set comes from.
func jwksSource(pc config.JWTProvider) string {
	switch {
	case pc.JWKSURI != "":
		return pc.JWKSURI
	case pc.JWKSFile != "":
		return pc.JWKSFile
	default:
		return "OpenID discovery of " + pc.Issuer
	}
}

// summary is validate's one line on success.
func summary(cfg *config.Config, p *parts, source string) string {
	var b strings.Builder
	providers := "providers"
	if len(cfg.JWT.Providers) == 1 {
		providers = "provider"
	}
	fmt.Fprintf(&b, "configuration OK: %d JWT %s, policy revision %s", len(cfg.JWT.Providers), providers, p.policy.Revision())
	if p.policy.Native() {
		b.WriteString(" (native default decision)")
	} else {
		fmt.Fprintf(&b, " (custom Rego from %s, decision %s)", strings.Join(p.policy.Paths(), ", "), p.policy.DecisionPath())
	}
	if p.shadowPolicy != nil {
		fmt.Fprintf(&b, ", shadow policy revision %s", p.shadowPolicy.Revision())
	}
	fmt.Fprintf(&b, ", listening on grpc %s, http %s, admin %s", cfg.Listen.GRPC, cfg.Listen.HTTP, cfg.Listen.Admin)
	if p.forwardAuth != nil {
		fmt.Fprintf(&b, ", forward_auth %s (%s)", cfg.Listen.ForwardAuth, cfg.ForwardAuth.Mode)
	}
	fmt.Fprintf(&b, "; from %s", source)
	return b.String()
}

// withoutComponent drops the records of one component (a logger made with
// .With("component", name)) and passes the others on.
type withoutComponent struct {
	slog.Handler
	component string
}

func (h withoutComponent) WithAttrs(attrs []slog.Attr) slog.Handler {
	for _, a := range attrs {
		if a.Key == "component" && a.Value.String() == h.component {
			return slog.DiscardHandler
		}
	}
	return withoutComponent{Handler: h.Handler.WithAttrs(attrs), component: h.component}
}

func (h withoutComponent) WithGroup(name string) slog.Handler {
	return withoutComponent{Handler: h.Handler.WithGroup(name), component: h.component}
}

// dropTime leaves the time out of validate's warnings: they are read at once.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
