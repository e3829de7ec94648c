# sweep-table.awk: the SWEEP lines of BenchmarkGPU (LEO_GPU_SWEEP) as a
# table: per model and setting, the mean decode rate of its rounds and its
# share of the bandwidth bound, its ratio to the defaults' in the same process, and whether the generated
# tokens' digest differs from the defaults' (it must not for settings that
# compute the same bits: LEO_CUDA_FUSE_PREP=1, LEO_CUDA_L2_AHEAD, LEO_CUDA_PDL).
#
#   awk -f hack/gpu/sweep-table.awk profile.log
/^SWEEP / {
	line = $0
	sub(/^SWEEP /, "", line)
	model = line
	sub(/, round [0-9]+: .*/, "", model)
	rest = line
	sub(/^[^:]*: /, "", rest)
	setting = rest
	sub(/: decode b1 .*/, "", setting)
	rate = rest
	sub(/.*decode b1 /, "", rate)
	sub(/ tok\/s.*/, "", rate)
	digest = rest
	sub(/.*tokens /, "", digest)
	sub(/\).*/, "", digest)
	key = model SUBSEP setting
	if (!(key in runs)) order[++keys] = key
	share = rest
	sub(/.*\(/, "", share)
	sub(/% of bound.*/, "", share)
	pct[key] += share
	sum[key] += rate
	runs[key]++
	rates[key] = rates[key] (runs[key] > 1 ? ", " : "") rate
	if (runs[key] == 1) first[key] = digest
	else if (digest != first[key]) first[key] = "varies"
}
END {
	for (i = 1; i <= keys; i++) {
		split(order[i], part, SUBSEP)
		base = part[1] SUBSEP "defaults"
		mean = sum[order[i]] / runs[order[i]]
		ratio = (base in sum) ? mean / (sum[base] / runs[base]) : 0
		same = (base in first) && first[order[i]] == first[base] ? "same tokens" : "tokens differ"
		# (short names: the device tool returns the last 12,000 characters)
		m = part[1]
		sub(/^llama-2-/, "", m)
		sub(/\.gguf$/, "", m)
		set = part[2]
		gsub(/LEO_CUDA_/, "", set)
		printf "%-8s %-52s %6.1f tok/s (%s) %4.1f%%  %.3fx  %s\n", m, set, mean, rates[order[i]],
		       pct[order[i]] / runs[order[i]], ratio, same
	}
}
