# Spam into Junk. rspamd marks inbound mail with "X-Spam: Yes" from policy.spam.junk_score
# (mailstack.yaml) on, after removing any copy of the header the sender put there. This rule
# runs before each mailbox's own Sieve script (sieve_before in dovecot.conf); `stop` ends
# there, so spam never triggers a user's vacation reply or redirect.
# Every *.sieve file in this directory runs, in name order; the dovecot container compiles
# them at start, and `mailstack check config dovecot` checks them.
require ["fileinto", "mailbox"];

if header :is "X-Spam" "Yes" {
  fileinto :create "Junk";
  stop;
}
