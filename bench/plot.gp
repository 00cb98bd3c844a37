# The chart of a bench/run.sh report: req/s (top) and the proxy's CPU time per request (bottom), by
# scenario and proxy, both on log scales, each bar labelled with its value. bench/run.sh calls it as
#   gnuplot -e "data='chart.dat'; out='report.png'; title='...'" bench/plot.gp
# data: a header line, then per scenario: "label" portier_rps nginx_rps haproxy_rps limit_rps
# portier_cpu nginx_cpu haproxy_cpu ("-" where a figure is missing).
if (!exists("title")) title = "portier, nginx, HAProxy"
set terminal pngcairo size 1400,900 noenhanced font "sans,10"
set output out
set datafile missing "-"
set datafile columnheaders

set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border lc rgb "#333333"
set boxwidth 0.9
set grid ytics lc rgb "#dddddd"
set xtics nomirror
set ytics nomirror
set key outside right top vertical
set lmargin at screen 0.06
set rmargin at screen 0.87
set linetype 1 lc rgb "#d62728"
set linetype 2 lc rgb "#2ca02c"
set linetype 3 lc rgb "#1f77b4"
set linetype 4 lc rgb "#999999"
set logscale y
# Room above the tallest bar for its label (the range then ends at the next decade).
set offsets 0, 0, graph 0.12, 0

# The centre of bar j (0-based) of n in a cluster, gap 1 between clusters.
bar(j, n) = $0 + (j - (n - 1) / 2.0) / (n + 1.0)
lbl(v, fmt) = sprintf(fmt, v)

set multiplot layout 2,1 title title font "sans,13"

set title "requests per second (median over rounds; higher is better; (d) TLS: one request per new connection)"
set yrange [100:*]
set format y "%.0s%c"
plot data using 2:xtic(1) title "portier", '' using 3 title "nginx", '' using 4 title "HAProxy", \
     '' using 5 title "no proxy (limit)", \
     for [j = 0:3] '' using (bar(j, 4)):(column(j + 2)):(lbl(column(j + 2), "%.0f")) \
         with labels rotate by 90 left offset 0,0.4 font "sans,8" notitle

set title "proxy CPU time per request, µs (utime + stime; median; lower is better; (d) TLS: per connection)"
set yrange [1:*]
set format y "%g"
plot data using 6:xtic(1) title "portier", '' using 7 title "nginx", '' using 8 title "HAProxy", \
     for [j = 0:2] '' using (bar(j, 3)):(column(j + 6)):(lbl(column(j + 6), "%.1f")) \
         with labels rotate by 90 left offset 0,0.4 font "sans,8" notitle

unset multiplot
