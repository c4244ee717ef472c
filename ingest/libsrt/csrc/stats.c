/* Reads the few receiver figures Ferrocast exports from libsrt's SRT_TRACEBSTATS. Done in C
 * so that the struct's layout comes from the installed srt.h, not from a Rust copy of it. */
#include <srt/srt.h>
#include <stdint.h>

struct fc_srt_stats {
    double rtt_ms;
    int64_t pkt_recv_total;
    int64_t pkt_rcv_loss_total;
    int64_t pkt_rcv_retrans_total;
    int64_t pkt_rcv_drop_total;
    int64_t rcv_buf_ms;
    int64_t rcv_buf_bytes;
    double recv_rate_mbps;
};

int fc_srt_stats(SRTSOCKET sock, struct fc_srt_stats *out) {
    SRT_TRACEBSTATS s;
    /* clear = 0: the "local" counters are then totals since the connection began. */
    if (srt_bstats(sock, &s, 0) != 0) {
        return -1;
    }
    out->rtt_ms = s.msRTT;
    out->pkt_recv_total = s.pktRecvTotal;
    out->pkt_rcv_loss_total = s.pktRcvLossTotal;
    out->pkt_rcv_retrans_total = s.pktRcvRetrans;
    out->pkt_rcv_drop_total = s.pktRcvDropTotal;
    out->rcv_buf_ms = s.msRcvBuf;
    out->rcv_buf_bytes = s.byteRcvBuf;
    out->recv_rate_mbps = s.mbpsRecvRate;
    return 0;
}
