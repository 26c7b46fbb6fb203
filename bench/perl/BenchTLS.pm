package BenchTLS;
# Loaded into check_email_delivery and its sub-plugins via PERL5OPT=-MBenchTLS.
# Net::SMTP::TLS calls IO::Socket::SSL::socket_to_SSL() without a host name, so the
# certificate of the stack (issued to "localhost" by the stack's private CA) fails
# hostname verification, and the CA is unknown to the system store. Keep verification ON
# but tell IO::Socket::SSL which CA to trust and which name to expect.
use strict;
use IO::Socket::SSL;
IO::Socket::SSL::set_client_defaults(
    SSL_ca_file         => $ENV{BENCH_CA_FILE},
    SSL_verify_mode     => IO::Socket::SSL::SSL_VERIFY_PEER(),
    SSL_verifycn_scheme => 'default',
    SSL_verifycn_name   => 'localhost',
) if $ENV{BENCH_CA_FILE};
1;
