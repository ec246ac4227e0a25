"""The stack's definition: mailstack.yaml's model, the render, the stack directory with its
state and the merge of operator edits, the secrets; `stackdir.Stack` is a loaded stack."""
