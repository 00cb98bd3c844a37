# The load sweep's chart of a bench/run.sh report: req/s (top) and p99 (bottom) against the number
# of keep-alive clients, a line per proxy and the no-proxy limit dashed, a column of panels per kind
# of pods. bench/run.sh calls it as
#   gnuplot -e "files='a:sweep-a.dat n:sweep-n.dat'; out='report-sweep.png'; title='...'" bench/sweep.gp
# files: KEY:FILE words, KEY "a" for the app2 pods, "n" for the nginx pods. Each file: a comment
# line, then per point: clients portier_rps nginx_rps haproxy_rps limit_rps portier_p99 nginx_p99
# haproxy_p99 limit_p99 (p99 in ms; "-" where a figure is missing).
if (!exists("title")) title = "portier, nginx, HAProxy by load"
nb = words(files)
set terminal pngcairo size (nb > 1 ? 1400 : 760),900 noenhanced font "sans,10"
set output out
set datafile missing "-"

set logscale x 2
set xrange [0.8:320]
set xtics ("1" 1, "4" 4, "16" 16, "64" 64, "256" 256) nomirror
set logscale y
set grid xtics ytics lc rgb "#dddddd"
# Room above and below the lines, not a whole decade.
set autoscale yfix
set offsets 0, 0, graph 0.08, graph 0.08
set xlabel "clients (keep-alive connections)"
# The colours of bench/plot.gp: portier red, nginx green, HAProxy blue, the limit grey.
set linetype 1 lc rgb "#d62728" lw 2 pt 7 ps 1.1
set linetype 2 lc rgb "#2ca02c" lw 2 pt 5 ps 1.1
set linetype 3 lc rgb "#1f77b4" lw 2 pt 9 ps 1.3
set linetype 4 lc rgb "#999999" lw 2 pt 6 ps 1.1 dt 2

pods(k) = (k eq "a" ? "the app2 pods (/api/info)" : "the nginx pods (/bytes/100, 3 workers)")

set multiplot layout 2, nb title title font "sans,13"
do for [i = 1:nb] {
    w = word(files, i)
    f = w[3:]
    set title "req/s behind ".pods(w[1:1])." (median over rounds; higher is better)"
    set ylabel "requests per second"
    set key bottom right
    set ytics ("500" 500, "1k" 1e3, "2k" 2e3, "5k" 5e3, "10k" 1e4, "20k" 2e4, "50k" 5e4, "100k" 1e5, "200k" 2e5, "500k" 5e5)
    plot f using 1:2 with linespoints lt 1 title "portier", '' using 1:3 with linespoints lt 2 title "nginx", \
         '' using 1:4 with linespoints lt 3 title "HAProxy", '' using 1:5 with linespoints lt 4 title "no proxy (limit)"
}
do for [i = 1:nb] {
    w = word(files, i)
    f = w[3:]
    set title "p99 latency behind ".pods(w[1:1])." (wrk, median over rounds; lower is better)"
    set ylabel "p99, ms"
    set key top left
    set ytics ("0.01" 0.01, "0.02" 0.02, "0.05" 0.05, "0.1" 0.1, "0.2" 0.2, "0.5" 0.5, "1" 1, "2" 2, "5" 5, "10" 10, \
               "20" 20, "50" 50, "100" 100, "200" 200, "500" 500, "1000" 1000)
    plot f using 1:6 with linespoints lt 1 title "portier", '' using 1:7 with linespoints lt 2 title "nginx", \
         '' using 1:8 with linespoints lt 3 title "HAProxy", '' using 1:9 with linespoints lt 4 title "no proxy (limit)"
}
unset multiplot
