"""Finding messages for the admin console: the search form and the query it builds."""

from __future__ import annotations

from flask_babel import gettext as _, lazy_gettext as _l
from datetime import datetime, time, timedelta

from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, StringField
from wtforms.validators import Length, Optional, ValidationError

from .database import like_literal
from .search_index import narrowed
from .search_text import parse
from .models import PUBLIC_KEY, Conversation, Membership, Message, User, db

PUBLIC_NAMES = {"public", "public room"}


def like_anywhere(text: str) -> str:
    """A LIKE pattern matching text anywhere, with its wildcards taken literally."""
    return f"%{like_literal(text)}%"


class DayField(DateField):
    """A date (YYYY-MM-DD, as date inputs send it) with an error that says how to fix it."""

    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError(_("Enter a date as YYYY-MM-DD."))


class MessageSearchForm(FlaskForm):
    """Filters of the message list (a GET form: it changes nothing, needs no token)."""

    class Meta:
        csrf = False

    q = StringField(_l("Text"), validators=[Optional(), Length(max=200)])
    author = StringField(_l("Author"), validators=[Optional(), Length(max=32)])
    conversation = StringField(_l("Conversation"), validators=[Optional(), Length(max=80)])
    since = DayField(_l("From"), validators=[Optional()])
    until = DayField(_l("To"), validators=[Optional()])

    def validate_author(self, field):
        """Name an existing user."""
        name = (field.data or "").strip()
        if name and User.by_username(name) is None:
            raise ValidationError(_("Nobody is called %(name)s; check the spelling.", name=name))

    def validate_conversation(self, field):
        """"Public room", or one or two member names of private chats."""
        for name in _conversation_names(field.data):
            if User.by_username(name) is None:
                raise ValidationError(_("Nobody is called %(name)s; check the spelling.", name=name))

    def validate_until(self, field):
        """The range must not end before it starts."""
        if field.data and self.since.data and field.data < self.since.data:
            raise ValidationError(_("The end date is before the start date; swap them."))

    def filters(self) -> dict:
        """The filters in use, for links to further pages."""
        return {
            name: (value.isoformat() if hasattr(value, "isoformat") else value)
            for name, value in self.data.items()
            if value
        }


def _conversation_names(value: str | None) -> list[str]:
    """Member names in a conversation filter; none for the public room."""
    value = (value or "").strip()
    if not value or value.lower() in PUBLIC_NAMES:
        return []
    return [n for n in value.replace(",", " ").replace("&", " ").split() if n][:2]


def search_messages(form: MessageSearchForm, before: int | None = None):
    """Newest-first query for the messages matching the form's filters."""
    query, order = select(Message), Message.id
    text = (form.q.data or "").strip()
    terms = parse(text).terms
    if terms:  # the same engine as everyone's search, over every conversation
        query, order = narrowed(query, terms)
    elif text:  # only symbols ("%"), which no index holds: look for them literally
        query = query.where(Message.body.ilike(like_anywhere(text), escape="\\"))
    if form.author.data and form.author.data.strip():
        query = query.where(Message.author_id == User.by_username(form.author.data.strip()).id)
    conversation = (form.conversation.data or "").strip()
    if conversation:
        names = _conversation_names(conversation)
        users = [User.by_username(n) for n in names]
        if not users:
            keys = select(Conversation.id).where(Conversation.key == PUBLIC_KEY)
        elif len(users) == 2:
            keys = select(Conversation.id).where(
                Conversation.key == Conversation.direct_key(users[0].id, users[1].id)
            )
        else:
            keys = (
                select(Membership.conversation_id)
                .join(Conversation, Conversation.id == Membership.conversation_id)
                .where(Membership.user_id == users[0].id, Conversation.key != PUBLIC_KEY)
            )
        query = query.where(Message.conversation_id.in_(keys))
    if form.since.data:
        query = query.where(Message.created_at >= datetime.combine(form.since.data, time.min))
    if form.until.data:
        end = datetime.combine(form.until.data + timedelta(days=1), time.min)
        query = query.where(Message.created_at < end)
    if before:
        query = query.where(Message.id < before)
    return query.order_by(order.desc())


def conversation_labels(conversations) -> dict[int, str]:
    """What to call each conversation: "Public room", "#room", or its two members' names."""
    ids = {i for c in conversations if c.is_direct for i in c.member_ids()}
    names = dict(db.session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())
    return {
        c.id: _("Public room") if c.is_public
        else f"#{c.name}" if c.is_room
        else " & ".join(names.get(i, "(gone)") for i in c.member_ids())
        for c in conversations
    }
