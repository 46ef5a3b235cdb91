/* Shows memory fields of the Elastic Sizing forms in GB as one types, and
 * keeps a disabled Adjust or Apply Recommendation (shown with why as its
 * tooltip) from acting. */
(function () {
  'use strict';

  var FIELDS = '#id_memory_mb, #id_memory_step, #id_minimum_memory';

  function describe(megabytes) {
    if (!megabytes) {
      return '';
    }
    var gigabytes = megabytes / 1024;
    return '= ' + (Math.round(gigabytes * 100) / 100) + ' GB';
  }

  function attach(modal) {
    $(modal).find('.xloud-elastic-form').find(FIELDS).each(function () {
      var input = $(this);
      var hint = $('<span class="xloud-memory-hint"></span>');
      input.after(hint);
      var update = function () {
        hint.text(describe(parseInt(input.val(), 10)));
      };
      input.on('input change', update);
      update();
    });
  }

  horizon.modals.addModalInitFunction(attach);
  $(function () { attach(document); });
  // Delegated: rows refresh themselves and bring new buttons.
  $(document).on('click',
                 '.xloud-elastic-sizing a.btn.disabled, ' +
                 '.xloud-elastic-sizing button.btn.disabled',
                 function (event) {
                   event.preventDefault();
                   event.stopPropagation();
                 });
}());
