# Reads `go test -bench` output and appends, for every benchmark group that
# has a "<group>/baseline" member, each member's time as a ratio of that
# baseline measured in the same run. Ratios travel between machines; absolute
# nanoseconds do not.
/^Benchmark/ {
	print
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 2; i < NF; i++) if ($(i + 1) == "ns/op") ns[name] = $i
	order[++n] = name
	next
}
{ print }
END {
	header = 0
	for (i = 1; i <= n; i++) {
		name = order[i]; group = name; sub(/\/.*/, "", group)
		base = group "/baseline"
		if (!(base in ns) || name == base || ns[base] == 0) continue
		if (!header) { print "\nratio to the baseline of the same run (time/op):"; header = 1 }
		printf "  %-70s %6.2fx\n", name, ns[name] / ns[base]
	}
}
