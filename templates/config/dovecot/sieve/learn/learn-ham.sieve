# Spam learning (features.spam_learning): a message a user moves out of Junk is reported to
# rspamd as ham, unless it goes to Trash (deleting spam says nothing about it). IMAPSieve runs
# this script (imapsieve_mailbox2 in dovecot.conf); the dovecot container compiles it at start.
require ["vnd.dovecot.pipe", "copy", "imapsieve", "environment", "variables"];

if environment :matches "imap.mailbox" "*" {
  set "destination" "${1}";
}
if string :is "${destination}" "Trash" {
  stop;
}
pipe :copy "rspamd-learn" ["ham"];
