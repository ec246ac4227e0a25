# Spam learning (features.spam_learning): a message a user moves or copies into Junk is
# reported to rspamd as spam (its Bayes classifier, kept in Redis). IMAPSieve runs this script
# (imapsieve_mailbox1 in dovecot.conf); the dovecot container compiles it at start.
require ["vnd.dovecot.pipe", "copy", "imapsieve"];

pipe :copy "rspamd-learn" ["spam"];
