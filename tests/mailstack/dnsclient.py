"""Asking the stack's DNS server, with dnspython."""

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from .config import DNS_PORT, HOST


def dns_query(name, qtype="TXT", server=(HOST, DNS_PORT), timeout=2.0, tcp=False):
    """Ask server (host, port) for name's records of qtype, over UDP (TCP
    when the answer is truncated, or with tcp=True).

    Returns (rcode, answers): rcode "NOERROR", "NXDOMAIN", ...; answers of
    the asked type: TXT -> str (the record's strings joined, as SPF/DKIM/
    DMARC verifiers read it), A/AAAA -> address, MX -> (preference, host),
    others -> the record's wire form.  Raises OSError when no answer comes."""
    rdtype = dns.rdatatype.from_text(qtype.upper())
    query = dns.message.make_query(name, rdtype)
    host, port = server
    try:
        if tcp:
            response = dns.query.tcp(query, host, timeout=timeout, port=port)
        else:
            response, _ = dns.query.udp_with_fallback(query, host, timeout=timeout, port=port)
    except dns.exception.Timeout as exc:
        raise TimeoutError(f"no DNS answer from {host}:{port} within {timeout} s") from exc
    except dns.exception.DNSException as exc:
        raise OSError(f"DNS query to {host}:{port} failed: {exc}") from exc
    answers = []
    for rrset in response.answer:
        if rrset.rdtype != rdtype:
            continue
        for rdata in rrset:
            answers.append(_answer(rdata))
    return dns.rcode.to_text(response.rcode()), answers


def _answer(rdata):
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdata.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return rdata.address
    if rdata.rdtype == dns.rdatatype.MX:
        return rdata.preference, rdata.exchange.to_text(omit_final_dot=True)
    return rdata.to_wire()
