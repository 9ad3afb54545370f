# bench/plot.gp - one plot of bench/sweep's data: publish throughput (left axis) and p99
# publish-to-receipt latency (right axis) of spbe-bus and NATS JetStream.
#   gnuplot -e "data='publishers.dat'; out='performance-publishers.svg'; kind='publishers'" plot.gp
# kind is publishers or size; the data file's columns: x, spbe msgs/s, spbe p99 us,
# NATS msgs/s, NATS p99 us.

set terminal svg size 820,480 dynamic enhanced font 'sans,12' background rgb 'white'
set output out
set datafile missing 'NaN'

if (kind eq 'size') {
    set title 'publish with receipts: 8 publishers, window 1000 each'
    set xlabel 'message size (payload)'
    set xtics ('64 B' 64, '256 B' 256, '1 KiB' 1024, '4 KiB' 4096, '16 KiB' 16384, '64 KiB' 65536)
    set xrange [48:88000]
} else {
    set title 'publish with receipts: 256 B, window 1000 per publisher'
    set xlabel 'publishers (each its own connection)'
    set xtics (1, 2, 4, 8)
    set xrange [0.8:10]
}
set logscale x 2

set ylabel 'throughput (msgs/s, solid)'
set logscale y 10
set format y '%.0s%c'
set ytics nomirror
set y2label 'p99 publish to receipt / PubAck (ms, dashed)'
set logscale y2 10
set y2tics
set grid xtics ytics
set key outside bottom center horizontal maxrows 2

spbe = '#1f5fa8'
nats = '#d9822b'
plot data using 1:2 axes x1y1 with linespoints lw 2 pt 7 lc rgb spbe title 'spbe-bus msgs/s', \
     data using 1:4 axes x1y1 with linespoints lw 2 pt 7 lc rgb nats title 'NATS JetStream msgs/s', \
     data using 1:($3 / 1000) axes x1y2 with linespoints lw 2 dt 2 pt 6 lc rgb spbe \
          title 'spbe-bus p99 receipt', \
     data using 1:($5 / 1000) axes x1y2 with linespoints lw 2 dt 2 pt 6 lc rgb nats \
          title 'NATS JetStream p99 PubAck'
